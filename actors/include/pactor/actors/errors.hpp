// The errors of the actor layer, each a distinct type a caller can catch.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/runtime/pipe.hpp> // pactor::timeout_error

#include <cstddef>
#include <stdexcept>
#include <string>

namespace pactor {

/// A send or request to an actor that has exited for good.
class actor_exited : public std::runtime_error {
public:
  actor_exited(actor_ref who, const std::string& why)
      : std::runtime_error("pactor::actor_exited: " + who.to_string()
                           + " has exited" + (why.empty() ? "" : ": " + why)),
        who_(who) {
  }
  [[nodiscard]] actor_ref who() const noexcept {
    return who_;
  }

private:
  actor_ref who_;
};

/// The actor answered a request with an error: its handler threw, or it
/// has no handler for the message.
class remote_error : public std::runtime_error {
public:
  remote_error(std::string type, const std::string& message)
      : std::runtime_error("pactor::remote_error: " + type + ": " + message),
        type_(std::move(type)), message_(message) {
  }
  /// The exception's type name in the actor ("pactor::unknown_message"
  /// when it had no handler).
  [[nodiscard]] const std::string& type() const noexcept {
    return type_;
  }
  [[nodiscard]] const std::string& message() const noexcept {
    return message_;
  }

private:
  std::string type_;
  std::string message_;
};

/// A warm actor's state encodes to more than spawn_options::state_bytes: the
/// incarnation ends (its last message unacknowledged).
class state_too_large : public std::length_error {
public:
  state_too_large(std::size_t size, std::size_t limit)
      : std::length_error(
        "pactor::state_too_large: the state encodes to " + std::to_string(size)
        + " bytes, spawn_options::state_bytes is " + std::to_string(limit)) {
  }
};

/// A warm restart found a committed state that does not decode
/// (bad_state::fail ends the incarnation with it).
class stash_error : public std::runtime_error {
public:
  explicit stash_error(const std::string& what)
      : std::runtime_error("pactor::stash_error: " + what) {
  }
};

/// The node process of the actor system is gone (killed, or shut down).
class actor_system_down : public std::runtime_error {
public:
  explicit actor_system_down(const std::string& what)
      : std::runtime_error("pactor::actor_system_down: " + what) {
  }
};

} // namespace pactor
