// Function references across exec: module + offset + GNU build id.

#include "internal.hpp"

#include <cstring>
#include <elf.h>
#include <link.h>
#include <stdexcept>

namespace pactor::detail {

namespace {

std::string build_id_of(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE)
      continue;
    // The note's address is the module's load address plus its offset.
    // NOLINTNEXTLINE(performance-no-int-to-ptr)
    const auto* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const char* name = p + sizeof(ElfW(Nhdr));
      const char* desc = name + ((nh->n_namesz + 3) & ~3U);
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4
          && std::memcmp(name, "GNU", 4) == 0) {
        static constexpr char hex[] = "0123456789abcdef";
        std::string id;
        for (unsigned j = 0; j < nh->n_descsz; ++j) {
          auto b = static_cast<unsigned char>(desc[j]);
          id += hex[b >> 4];
          id += hex[b & 15];
        }
        return id;
      }
      p = desc + ((nh->n_descsz + 3) & ~3U);
    }
  }
  return {};
}

struct locate_ctx {
  ElfW(Addr) addr = 0;
  bool found = false;
  bool is_main = false;
  std::string path;
  ElfW(Addr) base = 0;
  std::string build_id;
};

struct find_ctx {
  const function_ref* ref = nullptr;
  bool found = false;
  ElfW(Addr) base = 0;
  std::string build_id;
};

} // namespace

function_ref make_function_ref(erased_fn fn) {
  locate_ctx ctx;
  ctx.addr = reinterpret_cast<ElfW(Addr)>(fn);
  bool first = true;
  struct state {
    locate_ctx* ctx;
    bool* first;
  } st{&ctx, &first};
  dl_iterate_phdr(
    [](dl_phdr_info* info, std::size_t, void* data) -> int {
      auto& s = *static_cast<state*>(data);
      bool is_first = *s.first;
      *s.first = false;
      for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD)
          continue;
        auto lo = info->dlpi_addr + ph.p_vaddr;
        if (s.ctx->addr >= lo && s.ctx->addr < lo + ph.p_memsz) {
          s.ctx->found = true;
          s.ctx->is_main = is_first;
          s.ctx->path = info->dlpi_name != nullptr ? info->dlpi_name : "";
          s.ctx->base = info->dlpi_addr;
          s.ctx->build_id = build_id_of(info);
          return 1;
        }
      }
      return 0;
    },
    &st);
  if (!ctx.found)
    throw std::logic_error(
      "pactor: the target function is not in any loaded module");
  if (!ctx.is_main && ctx.path.empty())
    throw std::logic_error(
      "pactor: the target function is in a module without a path (vdso?)");
  function_ref ref;
  ref.module = ctx.is_main ? std::string() : ctx.path;
  ref.offset = ctx.addr - ctx.base;
  ref.build_id = std::move(ctx.build_id);
  return ref;
}

erased_fn resolve_function_ref(const function_ref& ref) {
  find_ctx ctx;
  ctx.ref = &ref;
  bool first = true;
  struct state {
    find_ctx* ctx;
    bool* first;
  } st{&ctx, &first};
  dl_iterate_phdr(
    [](dl_phdr_info* info, std::size_t, void* data) -> int {
      auto& s = *static_cast<state*>(data);
      bool is_first = *s.first;
      *s.first = false;
      const auto& want = s.ctx->ref->module;
      bool match = want.empty()
                     ? is_first
                     : (info->dlpi_name != nullptr && want == info->dlpi_name);
      if (!match)
        return 0;
      s.ctx->found = true;
      s.ctx->base = info->dlpi_addr;
      s.ctx->build_id = build_id_of(info);
      return 1;
    },
    &st);
  const char* module
    = ref.module.empty() ? "the main program" : ref.module.c_str();
  if (!ctx.found)
    throw std::runtime_error(std::string("the target's module ") + module
                             + " is not loaded in the child");
  if (ctx.build_id != ref.build_id)
    throw std::runtime_error(std::string("the build id of ") + module
                             + " differs between parent (" + ref.build_id
                             + ") and child (" + ctx.build_id
                             + "): was the program rebuilt while running?");
  // The function's address in this process: load address plus offset.
  // NOLINTNEXTLINE(performance-no-int-to-ptr)
  return reinterpret_cast<erased_fn>(ctx.base + ref.offset);
}

} // namespace pactor::detail
