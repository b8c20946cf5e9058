// Chat renderings. The V3 expectations are what transformers' apply_chat_template (Jinja, with
// DeepSeek-V3's tokenizer_config.json template) renders for the same messages, quirks included.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/chat_template.h"

namespace dsv3::tokenizer_chat_template_test {
namespace {

ChatMessage Msg(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}
ChatMessage Calls(std::vector<ToolCall> calls) {
  ChatMessage m;
  m.role = "assistant";
  m.content_is_null = true;
  m.tool_calls = std::move(calls);
  return m;
}
ToolCall Call(std::string name, std::string args) {
  return {.type = "function", .name = std::move(name), .arguments = std::move(args)};
}

struct ChatCase {
  std::string name;
  ChatTemplate chat_template;
  std::vector<ChatMessage> messages;
  bool add_generation_prompt;
  std::string expected;
};

class ChatTemplateTest : public ::testing::TestWithParam<ChatCase> {};

TEST_P(ChatTemplateTest, RendersLikeTheJinjaTemplate) {
  const ChatCase& c = GetParam();
  absl::StatusOr<std::string> text =
      RenderChat(c.chat_template, c.messages, c.add_generation_prompt, "<B>");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, c.expected);
}

const std::string kCallA =
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```<｜tool▁call▁end｜>";
const std::string kCallB =
    "<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n[]\n```<｜tool▁call▁end｜>";

INSTANTIATE_TEST_SUITE_P(
    Cases, ChatTemplateTest,
    ::testing::Values(
        ChatCase{"SystemAndUser",
                 ChatTemplate::kV3,
                 {Msg("system", "S"), Msg("user", "Hi")},
                 true,
                 "<B>S<｜User｜>Hi<｜Assistant｜>"},
        ChatCase{"SystemsAreJoinedAndHoisted",
                 ChatTemplate::kV3,
                 {Msg("system", "A"), Msg("user", "Q"), Msg("system", "B")},
                 false,
                 "<B>A\n\nB<｜User｜>Q"},
        ChatCase{"MultiTurn",
                 ChatTemplate::kV3,
                 {Msg("user", "1"), Msg("assistant", "2"), Msg("user", "3")},
                 true,
                 "<B><｜User｜>1<｜Assistant｜>2<｜end▁of▁sentence｜><｜User｜>3<｜Assistant｜>"},
        // The first call of a conversation leaves its block unclosed; the answer after tool
        // output follows <｜tool▁outputs▁end｜> directly.
        ChatCase{"OneCallThenOutputThenAnswer",
                 ChatTemplate::kV3,
                 {Msg("user", "W?"), Calls({Call("a", "{}")}), Msg("tool", "sunny"),
                  Msg("assistant", "It is sunny.")},
                 false,
                 "<B><｜User｜>W?<｜Assistant｜><｜tool▁calls▁begin｜>" + kCallA +
                     "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜>"
                     "<｜tool▁outputs▁end｜>It is sunny.<｜end▁of▁sentence｜>"},
        // No generation prompt after tool output, even when asked for.
        ChatCase{"TwoCallsTwoOutputs",
                 ChatTemplate::kV3,
                 {Msg("user", "Q"), Calls({Call("a", "{}"), Call("b", "[]")}), Msg("tool", "x"),
                  Msg("tool", "y")},
                 true,
                 "<B><｜User｜>Q<｜Assistant｜><｜tool▁calls▁begin｜>" + kCallA + "\n" + kCallB +
                     "<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜>"
                     "<｜tool▁output▁begin｜>x<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>y"
                     "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"},
        // Calls and outputs of a later turn render as continuations of the first ones.
        ChatCase{
            "SecondTurnCallsContinueTheFirst",
            ChatTemplate::kV3,
            {Msg("user", "Q"), Calls({Call("a", "{}")}), Msg("tool", "x"), Msg("assistant", "A"),
             Msg("user", "Q2"), Calls({Call("b", "[]")}), Msg("tool", "y")},
            true,
            "<B><｜User｜>Q<｜Assistant｜><｜tool▁calls▁begin｜>" + kCallA +
                "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>x<｜tool▁output▁end｜>"
                "<｜tool▁outputs▁end｜>A<｜end▁of▁sentence｜><｜User｜>Q2\n" +
                kCallB +
                "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>\n<｜tool▁output▁begin｜>y"
                "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"},
        ChatCase{"V3KeepsReasoning",
                 ChatTemplate::kV3,
                 {Msg("user", "Q"), Msg("assistant", "<think>r</think>A")},
                 false,
                 "<B><｜User｜>Q<｜Assistant｜><think>r</think>A<｜end▁of▁sentence｜>"},
        ChatCase{"R1DropsReasoningUpToTheLastClose",
                 ChatTemplate::kR1,
                 {Msg("user", "Q"), Msg("assistant", "<think>r</think>x</think>\n\nA"),
                  Msg("user", "Q2")},
                 true,
                 "<B><｜User｜>Q<｜Assistant｜>\n\nA<｜end▁of▁sentence｜><｜User｜>Q2"
                 "<｜Assistant｜><think>\n"},
        ChatCase{"R1WithoutReasoningOrPrompt",
                 ChatTemplate::kR1,
                 {Msg("system", "S"), Msg("user", "Q"), Msg("assistant", "A")},
                 false,
                 "<B>S<｜User｜>Q<｜Assistant｜>A<｜end▁of▁sentence｜>"},
        ChatCase{"Empty", ChatTemplate::kV3, {}, true, "<B><｜Assistant｜>"}),
    [](const ::testing::TestParamInfo<ChatCase>& info) { return info.param.name; });

TEST(ChatTemplateErrorsTest, RejectsUnknownRolesAndNullContent) {
  const std::vector<ChatMessage> unknown = {Msg("developer", "x")};
  EXPECT_EQ(RenderChat(ChatTemplate::kV3, unknown, false, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<ChatMessage> null_user = {Msg("user", "")};
  null_user[0].content_is_null = true;
  EXPECT_EQ(RenderChat(ChatTemplate::kV3, null_user, false, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dsv3::tokenizer_chat_template_test
