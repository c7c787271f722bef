// Which sanitizer this file is built with, under gcc and clang alike: ETSMGR_ASAN and ETSMGR_TSAN
// are 1 or 0 (gcc defines __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__; clang 14 answers
// __has_feature instead).
#ifndef ETSMGR_BASE_SANITIZERS_H_
#define ETSMGR_BASE_SANITIZERS_H_

#if defined(__SANITIZE_ADDRESS__)
#define ETSMGR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ETSMGR_ASAN 1
#endif
#endif
#ifndef ETSMGR_ASAN
#define ETSMGR_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define ETSMGR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ETSMGR_TSAN 1
#endif
#endif
#ifndef ETSMGR_TSAN
#define ETSMGR_TSAN 0
#endif

#endif  // ETSMGR_BASE_SANITIZERS_H_
