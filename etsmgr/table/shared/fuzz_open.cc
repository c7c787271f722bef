// libFuzzer target (fuzz_segment.h): the fuzzed bytes become a segment file, which is opened
// (header validation, lock checks, repair of what "killed writers" left), Check()ed and operated
// on. Every outcome must be OK or a typed error; a crash, a hang or a sanitizer report is a
// finding.
//
//   bazel build --config=fuzz //etsmgr/table/shared:fuzz_open
//   bazel-bin/etsmgr/table/shared/fuzz_open -max_total_time=60 -max_len=65536 [corpus_dir]
//
// The first input bytes pick what to overlay: a fuzzed prefix on a valid populated segment (so
// the fuzzer reaches past the header checks), or the raw bytes as the whole file.
#include <cstddef>
#include <cstdint>

#include "etsmgr/table/shared/fuzz_segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  etsmgr::shared_testing::FuzzSegmentOnce(data, size);
  return 0;
}
