// Everything in the runtime layer.

#pragma once

#include <pactor/runtime/condition.hpp>
#include <pactor/runtime/executor.hpp>
#include <pactor/runtime/init.hpp>
#include <pactor/runtime/lock.hpp>
#include <pactor/runtime/mailbox.hpp>
#include <pactor/runtime/pipe.hpp>
#include <pactor/runtime/pool.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>
#include <pactor/runtime/semaphore.hpp>
#include <pactor/runtime/shared_memory.hpp>
#include <pactor/runtime/value.hpp>
#include <pactor/runtime/wait.hpp>
