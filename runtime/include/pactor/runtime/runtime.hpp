// Everything in the runtime layer.

#pragma once

#include <pactor/runtime/init.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>
