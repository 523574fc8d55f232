# pactor: the two commands (`make run`, `make test`) and the optional targets.
# Every target installs what is missing first (tools/install-deps.sh).

BUILD        ?= build
BUILD_TYPE   ?= RelWithDebInfo
JOBS         ?= 2
PACTOR_WERROR ?= OFF
CMAKE_FLAGS  ?=
MAKEFLAGS    += --no-print-directory

.PHONY: all deps configure build run test bench test-asan test-tsan torture fuzz format tidy clean

all: build

deps:
	@tools/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DPACTOR_WERROR=$(PACTOR_WERROR) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: the supervised pipeline under its chaos monkey
# (examples/pipeline.cpp; PIPELINE_ARGS for its options).
run: build
	@$(BUILD)/examples/pipeline $(PIPELINE_ARGS)

# Every test, through CTest (unit suites, examples, install check, bench smoke run).
test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# pactor beside Python multiprocessing, in one run; writes bench/RESULTS.md.
bench: build
	@python3 bench/run.py --pactor $(BUILD)/bench/pactor-bench --out bench/RESULTS.md $(BENCH_ARGS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# ASan's own SIGSEGV handler would be reinstalled in every spawned child (a
# fresh ASan runtime starts after exec); the tests check that children die of
# their signals, so ASan leaves those signals alone here.
test-asan: export ASAN_OPTIONS = handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_abort=0:detect_leaks=1
test-asan: export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
test-asan:
	@$(MAKE) test BUILD=build-asan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DPACTOR_SANITIZERS=address,undefined -DPACTOR_ENABLE_BENCHMARKS=OFF"

# ThreadSanitizer over the runtime suite (queues, mutexes, pipes, processes).
test-tsan: export TSAN_OPTIONS = halt_on_error=1:die_after_fork=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_abort=0
test-tsan:
	@$(MAKE) build BUILD=build-tsan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DPACTOR_SANITIZERS=thread -DPACTOR_ENABLE_BENCHMARKS=OFF -DPACTOR_ENABLE_EXAMPLES=OFF"
	@# The torture suite is left out: it kills processes holding robust
	@# mutexes, and TSan does not count a takeover after EOWNERDEAD from a
	@# dead process as an acquire (its lock model is per process), so it
	@# reports the next unlock; TSan cannot see cross-process races anyway.
	@cd build-tsan && tests/serialization_tests --color_output=false \
	  && tests/runtime_tests --color_output=false --run_test='!queue_torture'

# The queue torture test's long form (the short form runs in `make test`).
TORTURE_SECONDS ?= 60
torture: build
	@PACTOR_TORTURE_SECONDS=$(TORTURE_SECONDS) $(BUILD)/tests/runtime_tests \
	  --run_test=queue_torture --log_level=message --color_output=false

# libFuzzer targets (clang only); runs each for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz:
	@PACTOR_WITH_CLANG=1 tools/install-deps.sh
	@cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
	  -DPACTOR_ENABLE_FUZZING=ON -DPACTOR_ENABLE_BENCHMARKS=OFF -DPACTOR_ENABLE_EXAMPLES=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target decode_fuzzer
	@mkdir -p build-fuzz/corpus && cp tests/fuzz/corpus/* build-fuzz/corpus/
	@build-fuzz/tests/fuzz/decode_fuzzer -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus

format:
	@git ls-files '*.hpp' '*.cpp' | xargs clang-format -i

tidy: configure
	@git ls-files '*.cpp' | grep -v -E '^(tests/install|tests/compile_fail|examples)/' \
	  | xargs clang-tidy -p $(BUILD) --quiet

clean:
	@rm -rf build build-asan build-tsan build-fuzz
