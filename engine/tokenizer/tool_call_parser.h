// Picks DeepSeek-V3 tool calls out of streaming output:
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```
//   <｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>
// Text outside the calls block is content.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/chat_template.h"

namespace dsv3 {

class ToolCallParser {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCall> tool_calls;  // calls completed by this piece of text
  };

  // Text may arrive in any pieces: markers split across pieces, or several in one. Bytes that
  // might start a marker, and a call not yet ended, are held back.
  Delta Push(std::string_view text);
  // Call at the end of the output: what is held back becomes content (an unfinished call keeps
  // its raw text, markers included, so that nothing the model wrote is lost).
  Delta Flush();

 private:
  enum class State {
    kContent,       // outside a calls block
    kBetweenCalls,  // inside the block, expecting a call or the block's end
    kInCall,        // after <｜tool▁call▁begin｜>, up to <｜tool▁call▁end｜>
  };

  State state_ = State::kContent;
  std::string held_;
};

}  // namespace dsv3
