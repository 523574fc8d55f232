// pactor: actor programs in which every actor is an OS process.
// This umbrella header includes every public part of the library.

#pragma once

#include <pactor/actors/actors.hpp>
#include <pactor/runtime/runtime.hpp>
#include <pactor/serialization/codec.hpp>
