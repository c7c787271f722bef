// The request path on arbitrary bytes (the fuzz target's body, also run by request_fuzz_test on
// seeds and generated inputs): parse what arrives in arbitrary pieces, run every request on a map
// keyspace, and check that everything sent back is well-formed RESP, one reply per request (plus
// one for a protocol error, after which nothing more is read). Aborts on a violation.
#ifndef ETSREDIS_REQUEST_FUZZ_H_
#define ETSREDIS_REQUEST_FUZZ_H_

#include <cstddef>
#include <cstdint>

namespace etsredis {

void FuzzRequests(const uint8_t* data, size_t size);

}  // namespace etsredis

#endif  // ETSREDIS_REQUEST_FUZZ_H_
