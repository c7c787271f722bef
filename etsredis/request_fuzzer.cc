// libFuzzer entry for the request path (see request_fuzz.h):
//   bazel build --config=fuzz //etsredis:request_fuzzer
//   bazel-bin/etsredis/request_fuzzer -max_total_time=60 <corpus dir>
#include <cstddef>
#include <cstdint>

#include "etsredis/request_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  etsredis::FuzzRequests(data, size);
  return 0;
}
