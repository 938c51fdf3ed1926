#include "engine/generate/stop_matcher.h"

#include "gtest/gtest.h"

namespace brickserve {
namespace {

TEST(StopMatcher, HoldsBackPossibleStartAndCutsAtMatch) {
  StopMatcher m({"STOP", "\n\n"});
  EXPECT_EQ(m.Push("hello S"), "hello ");  // "S" may start STOP
  EXPECT_EQ(m.Push("T"), "");
  EXPECT_EQ(m.Push("x"), "STx");  // not a stop after all
  EXPECT_EQ(m.Push(" and ST"), " and ");
  EXPECT_EQ(m.Push("OP tail"), "");
  ASSERT_TRUE(m.matched().has_value());
  EXPECT_EQ(*m.matched(), "STOP");
  EXPECT_EQ(m.Push("more"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, EarliestStopWinsAndFlushReturnsHeldText) {
  StopMatcher m({"bc", "abcd"});
  EXPECT_EQ(m.Push("xabc"), "xa");
  EXPECT_EQ(*m.matched(), "bc");
  StopMatcher n({"END"});
  EXPECT_EQ(n.Push("the EN"), "the ");
  EXPECT_EQ(n.Flush(), "EN");
}

TEST(StopMatcher, NoStopsPassesEverything) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("abc"), "abc");
  EXPECT_FALSE(m.matched().has_value());
}

}  // namespace
}  // namespace brickserve
