// One fuzz input against the segment open and attach path (test-only): the bytes become a
// segment file (raw, or overlaid on a valid populated segment), which is opened, Check()ed and
// operated on. Used by the libFuzzer target (fuzz_open.cc) and by fuzz_regression_test, which
// replays the inputs the fuzzer once failed on (testdata/fuzz/). Every outcome must be OK or a
// typed error; a crash, hang or sanitizer report is a finding. Not thread-safe.
#ifndef ETSMGR_TABLE_SHARED_FUZZ_SEGMENT_H_
#define ETSMGR_TABLE_SHARED_FUZZ_SEGMENT_H_

#include <cstddef>
#include <cstdint>

namespace etsmgr::shared_testing {

// The first byte picks the mode: % 4 == 0 the rest is the whole file; otherwise the rest is
// (offset hi, offset lo, length, bytes...) chunks written over a valid segment (offsets in bytes
// for mode 1, in 8-byte words otherwise).
void FuzzSegmentOnce(const uint8_t* data, size_t size);

}  // namespace etsmgr::shared_testing

#endif  // ETSMGR_TABLE_SHARED_FUZZ_SEGMENT_H_
