// dsv3-server's OpenAI-compatible HTTP API through the official `openai` npm client, as users
// run it. Run by tests/e2e/server_openai_sdk_test.cc with DSV3_HTTP_URL (http://host:port),
// DSV3_API_KEY and DSV3_MODEL set; exits non-zero on the first failed check.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.DSV3_HTTP_URL}/v1`;
const model = process.env.DSV3_MODEL;
const client = new OpenAI({ baseURL, apiKey: process.env.DSV3_API_KEY, maxRetries: 0 });
const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is a cat?' },
];

const tests = {
  async models() {
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), [model]);
  },

  async chatNonStreaming() {
    const r = await client.chat.completions.create({ model, messages, max_tokens: 24, seed: 1 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.ok(r.choices[0].message.content.length > 0);
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  },

  async chatStreamingWithUsage() {
    const stream = await client.chat.completions.create({
      model, messages, max_tokens: 16, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.ok(text.length > 0);
    assert.ok(['stop', 'length'].includes(finish));
    assert.ok(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 16);
  },

  async greedyStreamEqualsNonStreamed() {
    const params = { model, messages, max_tokens: 48, temperature: 0 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true });
    let text = '';
    for await (const chunk of stream) for (const c of chunk.choices) text += c.delta.content ?? '';
    assert.equal(text, whole.choices[0].message.content);
  },

  async completions() {
    const r = await client.completions.create({
      model, prompt: 'The capital of France is', max_tokens: 8, temperature: 0, logprobs: 2,
    });
    assert.equal(r.object, 'text_completion');
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.join(''), r.choices[0].text);
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.ok(lp.top_logprobs.every((t) => Object.keys(t).length >= 1));
    const echoed = await client.completions.create({
      model, prompt: 'The capital of France is', max_tokens: 8, temperature: 0, echo: true,
    });
    assert.equal(echoed.choices[0].text, 'The capital of France is' + r.choices[0].text);
  },

  async twoChoices() {
    const r = await client.chat.completions.create({ model, messages, max_tokens: 12, n: 2, seed: 5 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    const stream = await client.chat.completions.create({
      model, messages, max_tokens: 12, n: 2, seed: 5, stream: true,
    });
    const texts = ['', ''];
    for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.delta.content ?? '';
    assert.deepEqual(texts, r.choices.map((c) => c.message.content));
  },

  async logprobsWithText() {
    const r = await client.chat.completions.create({
      model, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3,
    });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    for (const t of content) {
      assert.equal(typeof t.token, 'string');
      assert.equal(Buffer.from(t.bytes).toString('utf8'), t.token);
      assert.equal(t.top_logprobs.length, 3);
      // Greedy: the chosen token is the most likely one.
      assert.equal(t.top_logprobs[0].token, t.token);
    }
  },

  async tools() {
    const tools = [{
      type: 'function',
      function: {
        name: 'get_weather', description: 'Current weather of a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    }];
    const r = await client.chat.completions.create({
      model, max_tokens: 24, tools, tool_choice: 'auto',
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 21}' },
      ],
    });
    assert.ok(['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason));
    await assert.rejects(
      client.chat.completions.create({ model, messages, tools, tool_choice: 'required' }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'tool_choice');
  },

  async badRequestNamesTheField() {
    await assert.rejects(
      client.chat.completions.create({ model, messages, temperature: -1 }),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature');
    await assert.rejects(
      client.chat.completions.create({ model: 'no-such-model', messages }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  },

  async authFailure() {
    const wrong = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
    await assert.rejects(
      wrong.chat.completions.create({ model, messages, max_tokens: 4 }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  },
};

let failed = 0;
for (const [name, test] of Object.entries(tests)) {
  try {
    await test();
    console.log(`ok ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAILED ${name}: ${e.stack ?? e}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
