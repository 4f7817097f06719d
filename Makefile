# The two commands a new user needs: `make run` and `make test`.
# Everything else here serves those two.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build build-asan run test test-unit test-asan soak clean

all: build

deps:
	@./packaging/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The sanitizer build uses clang so that the libFuzzer targets build with it.
build-asan: deps
	@CC=clang cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
		-DTND_SANITIZE=ON -DTND_FUZZ=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/daemon/tandemd $(ARGS)

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure -j 2 -LE soak
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j 2 -LE 'soak|noasan'
	@echo "make test: all suites passed (normal and ASan+UBSan)"

soak: build
	cd $(BUILD) && ctest --output-on-failure -L soak

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
