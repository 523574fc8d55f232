// Everything in the actor layer.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/actors/behavior.hpp>
#include <pactor/actors/dedup.hpp>
#include <pactor/actors/errors.hpp>
#include <pactor/actors/exit_reason.hpp>
#include <pactor/actors/manager.hpp>
#include <pactor/actors/reply_promise.hpp>
#include <pactor/actors/supervisor.hpp>
#include <pactor/actors/system.hpp>
#include <pactor/actors/this_actor.hpp>
