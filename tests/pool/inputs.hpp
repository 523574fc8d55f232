// Inputs for the pool tests: plain vectors and a lazy generated range
// (hand-written rather than std::views, which clang-tidy's clang 14 cannot
// parse with libstdc++ 12).

#pragma once

#include <cstddef>
#include <numeric>
#include <vector>

namespace pool_test {

/// 0, 1, ..., n - 1.
inline std::vector<int> upto(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// f(0), f(1), ..., f(n - 1), each computed when the pool reads it.
template <class F>
class generated {
public:
  generated(int n, F f) : n_(n), f_(std::move(f)) {
  }
  class iterator {
  public:
    using value_type = decltype(std::declval<const F&>()(0));
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(const generated* g, int i) : g_(g), i_(i) {
    }
    value_type operator*() const {
      return g_->f_(i_);
    }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    iterator operator++(int) {
      auto old = *this;
      ++i_;
      return old;
    }
    bool operator==(const iterator& o) const {
      return i_ == o.i_;
    }

  private:
    const generated* g_ = nullptr;
    int i_ = 0;
  };
  [[nodiscard]] iterator begin() const {
    return {this, 0};
  }
  [[nodiscard]] iterator end() const {
    return {this, n_};
  }
  [[nodiscard]] std::size_t size() const {
    return static_cast<std::size_t>(n_);
  }

private:
  int n_;
  F f_;
};

} // namespace pool_test
