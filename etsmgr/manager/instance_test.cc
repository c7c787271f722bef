// The instance's own small types: a client's name set and the listing token.
#include "etsmgr/manager/internal/instance.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace etsmgr::manager_internal {
namespace {

std::vector<std::string> Sorted(const ClientNames& names) {
  std::vector<std::string> all;
  names.ForEach([&](const std::string& name) { all.push_back(name); });
  std::sort(all.begin(), all.end());
  return all;
}

TEST(ClientNamesTest, FewAndManyBehaveAsOneSet) {
  ClientNames names;
  EXPECT_TRUE(names.empty());
  names.Insert("a");
  names.Insert("a");  // Idempotent.
  names.Insert("b");
  EXPECT_EQ(names.size(), 2u);
  names.Erase("a");
  names.Erase("zzz");  // Not there: no effect.
  EXPECT_EQ(Sorted(names), std::vector<std::string>{"b"});
  // Past the inline few: every name is kept, once.
  std::vector<std::string> expected = {"b"};
  for (int i = 0; i < 100; ++i) {
    names.Insert(absl::StrCat("t", i));
    names.Insert(absl::StrCat("t", i));
    expected.push_back(absl::StrCat("t", i));
  }
  names.Insert("b");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(Sorted(names), expected);
  for (int i = 0; i < 100; ++i) names.Erase(absl::StrCat("t", i));
  names.Erase("b");
  EXPECT_TRUE(names.empty());
  EXPECT_EQ(names.size(), 0u);
}

TEST(SharedNameTest, ListingFollowsTheEntry) {
  SharedName plain("x");
  EXPECT_EQ(plain.listing(), SharedName::Listing::kNotAToken);
  plain.Unlist();  // Not a token: stays one.
  EXPECT_EQ(plain.listing(), SharedName::Listing::kNotAToken);
  SharedName token("y", SharedName::Listing::kListed);
  SharedName copy = token;  // The table's heir data and the entry share one token.
  EXPECT_EQ(*copy.get(), "y");
  token.Unlist();
  EXPECT_EQ(copy.listing(), SharedName::Listing::kUnlisted);
  EXPECT_EQ(SharedName().listing(), SharedName::Listing::kNotAToken);
  EXPECT_EQ(SharedName().get(), nullptr);
}

// Lookups are cached per thread; registering or unregistering any instance invalidates them, even
// while the old instance is still alive (held here).
TEST(FindInstanceTest, SeesEveryRegistrationChange) {
  auto node = Node::Create(RuntimeOptions()).value();
  auto a = std::make_shared<Instance>("x");
  auto b = std::make_shared<Instance>("x");
  EXPECT_EQ(FindInstance(*node, "x"), nullptr);
  ASSERT_TRUE(RegisterInstance(*node, a));
  EXPECT_FALSE(RegisterInstance(*node, b));  // The name is taken.
  EXPECT_EQ(FindInstance(*node, "x"), a);
  EXPECT_EQ(FindInstance(*node, "x"), a);  // From the cache.
  EXPECT_EQ(FindInstance(*node, "y"), nullptr);
  UnregisterInstance(*node, a.get());
  EXPECT_EQ(FindInstance(*node, "x"), nullptr);
  ASSERT_TRUE(RegisterInstance(*node, b));
  EXPECT_EQ(FindInstance(*node, "x"), b);
  auto other = Node::Create(RuntimeOptions()).value();  // Another node: its own registry.
  EXPECT_EQ(FindInstance(*other, "x"), nullptr);
  UnregisterInstance(*node, b.get());
}

}  // namespace
}  // namespace etsmgr::manager_internal
