// The streaming parsers must give the same result however the text is cut into deltas.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/tokenizer/reasoning_parser.h"
#include "engine/tokenizer/tool_call_parser.h"

namespace dsv3::tokenizer_stream_parsers_test {
namespace {

// Every way of cutting `text` into two deltas, plus one byte at a time, plus all at once.
std::vector<std::vector<std::string>> Cuts(const std::string& text) {
  std::vector<std::vector<std::string>> cuts;
  for (size_t i = 0; i <= text.size(); ++i) cuts.push_back({text.substr(0, i), text.substr(i)});
  std::vector<std::string> bytes;
  for (const char c : text) bytes.emplace_back(1, c);
  cuts.push_back(bytes);
  return cuts;
}

struct ReasoningCase {
  std::string name;
  bool prompt_opened_think;
  std::string output;
  std::string reasoning;
  std::string content;
};

class ReasoningParserTest : public ::testing::TestWithParam<ReasoningCase> {};

TEST_P(ReasoningParserTest, SameSplitAtEveryCut) {
  const ReasoningCase& c = GetParam();
  for (const auto& deltas : Cuts(c.output)) {
    ReasoningParser parser(c.prompt_opened_think);
    std::string reasoning, content;
    for (const std::string& d : deltas) {
      ReasoningParser::Delta delta = parser.Push(d);
      reasoning += delta.reasoning;
      content += delta.content;
    }
    ReasoningParser::Delta last = parser.Flush();
    EXPECT_EQ(reasoning + last.reasoning, c.reasoning) << ::testing::PrintToString(deltas);
    EXPECT_EQ(content + last.content, c.content) << ::testing::PrintToString(deltas);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ReasoningParserTest,
    ::testing::Values(
        // R1's prompt ends "<think>\n": the output has no opening tag.
        ReasoningCase{"OpenedByPrompt", true, "Let me see.</think>\n\nAnswer", "Let me see.",
                      "\n\nAnswer"},
        ReasoningCase{"OpenedByPromptAndRepeated", true, "<think>r</think>A", "r", "A"},
        ReasoningCase{"OpenedByPromptNeverClosed", true, "still thinking <", "still thinking <",
                      ""},
        ReasoningCase{"OpenedInOutput", false, "<think>\nr\n</think>A</think>", "\nr\n",
                      "A</think>"},
        ReasoningCase{"NoReasoning", false, "<thin>plain answer", "", "<thin>plain answer"},
        ReasoningCase{"TagPrefixAtTheEnd", false, "<thi", "", "<thi"},
        ReasoningCase{"CloseTagPrefixInsideReasoning", true, "a</thin</think>b", "a</thin", "b"},
        ReasoningCase{"EmptyReasoning", true, "</think>", "", ""}),
    [](const ::testing::TestParamInfo<ReasoningCase>& info) { return info.param.name; });

struct ToolCase {
  std::string name;
  std::string output;
  std::string content;
  std::vector<ToolCall> calls;
};

class ToolCallParserTest : public ::testing::TestWithParam<ToolCase> {};

MATCHER(SameCall, "") {
  const ToolCall& a = std::get<0>(arg);
  const ToolCall& b = std::get<1>(arg);
  return a.type == b.type && a.name == b.name && a.arguments == b.arguments;
}

TEST_P(ToolCallParserTest, SameCallsAtEveryCut) {
  const ToolCase& c = GetParam();
  for (const auto& deltas : Cuts(c.output)) {
    ToolCallParser parser;
    std::string content;
    std::vector<ToolCall> calls;
    for (const std::string& d : deltas) {
      ToolCallParser::Delta delta = parser.Push(d);
      content += delta.content;
      calls.insert(calls.end(), delta.tool_calls.begin(), delta.tool_calls.end());
    }
    ToolCallParser::Delta last = parser.Flush();
    content += last.content;
    calls.insert(calls.end(), last.tool_calls.begin(), last.tool_calls.end());
    EXPECT_EQ(content, c.content) << ::testing::PrintToString(deltas);
    EXPECT_THAT(calls, ::testing::Pointwise(SameCall(), c.calls))
        << ::testing::PrintToString(deltas);
  }
}

const std::string kTwoCalls =
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
    "get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

INSTANTIATE_TEST_SUITE_P(
    Cases, ToolCallParserTest,
    ::testing::Values(
        ToolCase{"PlainText", "no calls here <｜tool", "no calls here <｜tool", {}},
        ToolCase{
            "TwoCallsAfterText",
            "Let me check." + kTwoCalls,
            "Let me check.",
            {{"function", "get_weather", "{\"city\": \"Paris\"}"}, {"function", "get_time", "{}"}}},
        ToolCase{
            "TextAfterTheBlock",
            kTwoCalls + " done",
            " done",
            {{"function", "get_weather", "{\"city\": \"Paris\"}"}, {"function", "get_time", "{}"}}},
        // As the V3 template renders a first call: no <｜tool▁calls▁end｜>.
        ToolCase{"BlockNeverClosed",
                 "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n"
                 "{\"a\": 1}\n```<｜tool▁call▁end｜>",
                 "",
                 {{"function", "f", "{\"a\": 1}"}}},
        ToolCase{"CallWithoutBlockMarker",
                 "x<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n{}<｜tool▁call▁end｜>y",
                 "xy",
                 {{"function", "f", "{}"}}},
        ToolCase{"UnfinishedCallStaysVisible",
                 "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{",
                 "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{",
                 {}},
        ToolCase{"MalformedCallStaysVisible",
                 "<｜tool▁call▁begin｜>no separator<｜tool▁call▁end｜>",
                 "<｜tool▁call▁begin｜>no separator<｜tool▁call▁end｜>",
                 {}}),
    [](const ::testing::TestParamInfo<ToolCase>& info) { return info.param.name; });

}  // namespace
}  // namespace dsv3::tokenizer_stream_parsers_test
