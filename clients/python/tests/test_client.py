"""Client and AsyncClient against a real dsv3-server serving the embedded demo model, which
continues English text and answers chats."""
import asyncio
import unittest

import grpc

from dsv3_serve import AsyncClient, Client
from server import Server

GREEDY = {"temperature": 0, "max_tokens": 12, "ignore_eos": True}


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server().start()
        cls.client = Client(cls.server.address, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.server.stop() == 0, cls.server.output()

    def test_generate_accepts_str_and_yields_text_pieces(self):
        pieces = list(self.client.generate("The history of the city", **GREEDY))
        self.assertTrue(pieces)
        self.assertTrue(all(isinstance(p, str) and p for p in pieces))
        self.assertRegex("".join(pieces), r"[a-z]{2,}")  # English words

    def test_str_bytes_and_token_id_prompts_agree(self):
        prompt = "The history of the city"
        text = "".join(self.client.generate(prompt, **GREEDY))
        self.assertEqual("".join(self.client.generate(prompt.encode(), **GREEDY)), text)
        # A text prompt starts with BOS unless add_bos_token=False; tokenize adds it on request.
        ids = self.client.tokenize(prompt, add_bos_token=True)
        self.assertEqual("".join(self.client.generate(ids, **GREEDY)), text)

    def test_generate_ids_yields_token_ids_that_detokenize_to_the_text(self):
        ids = list(self.client.generate_ids("The history of the city", **GREEDY))
        self.assertEqual(len(ids), GREEDY["max_tokens"])
        self.assertTrue(all(isinstance(i, int) for i in ids))
        text = "".join(self.client.generate("The history of the city", **GREEDY))
        self.assertEqual(self.client.detokenize(ids), text)

    def test_events_end_with_finish_reason_usage_and_logprobs(self):
        events = list(self.client.generate_events("The history of", logprobs=2, **GREEDY))
        self.assertTrue(all(e.finish_reason is None and e.usage is None for e in events[:-1]))
        last = events[-1]
        self.assertEqual(last.finish_reason, "length")
        self.assertEqual(last.usage.completion_tokens, GREEDY["max_tokens"])
        logprobs = [l for e in events for l in e.logprobs]
        self.assertEqual(len(logprobs), GREEDY["max_tokens"])
        self.assertEqual(len(logprobs[0].top), 2)

    def test_str_stop_strings_end_the_output(self):
        options = dict(GREEDY, max_tokens=64)
        events = list(self.client.generate_events("The history of the city", stop=[" "],
                                                  **options))
        self.assertNotIn(" ", "".join(e.text for e in events))
        self.assertEqual(events[-1].finish_reason, "stop")

    def test_chat_answers_in_english(self):
        messages = [{"role": "user", "content": "What does history mean?"}]
        answer = "".join(self.client.chat(messages, max_tokens=32, temperature=0))
        self.assertRegex(answer, r"[a-z]{2,}")

    def test_chat_events_split_r1_reasoning(self):
        messages = [{"role": "user", "content": "What does history mean?"}]
        events = list(self.client.chat_events(messages, template="r1", max_tokens=48,
                                              temperature=0))
        self.assertTrue("".join(e.reasoning_content + e.content for e in events))
        self.assertIsNotNone(events[-1].finish_reason)

    def test_leaving_a_stream_early_cancels_it(self):
        stream = self.client.generate("The history", temperature=0, max_tokens=4000,
                                      ignore_eos=True)
        next(stream)
        stream.close()  # what a `break` out of the loop does
        self.assertTrue(list(self.client.generate("The", **GREEDY)))

    def test_bad_arguments_raise_before_any_call(self):
        with self.assertRaisesRegex(TypeError, "temprature"):
            list(self.client.generate("x", temprature=0.5))
        with self.assertRaises(TypeError):
            list(self.client.generate(["1", "2"]))
        with self.assertRaisesRegex(ValueError, "template"):
            list(self.client.chat([{"role": "user", "content": "x"}], template="v2"))

    def test_server_errors_are_rpc_errors_with_its_message(self):
        with self.assertRaises(grpc.RpcError) as e:
            list(self.client.generate([10**8], max_tokens=2))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("token", e.exception.details())

    def test_model_info(self):
        info = self.client.model_info()
        self.assertTrue(info.has_tokenizer)
        self.assertEqual(info.backend, "cpu")

    def test_async_client_matches_the_blocking_one(self):
        prompt = "The history of the city"
        messages = [{"role": "user", "content": "What does history mean?"}]

        async def run():
            async with AsyncClient(self.server.address, timeout=60) as client:
                text = "".join([p async for p in client.generate(prompt, **GREEDY)])
                ids = [i async for i in client.generate_ids(prompt, **GREEDY)]
                answer = "".join([p async for p in client.chat(messages, max_tokens=32,
                                                                temperature=0)])
                tokens = await client.tokenize(prompt)
                return text, ids, answer, tokens

        text, ids, answer, tokens = asyncio.run(run())
        self.assertEqual(text, "".join(self.client.generate(prompt, **GREEDY)))
        self.assertEqual(ids, list(self.client.generate_ids(prompt, **GREEDY)))
        self.assertEqual(answer, "".join(self.client.chat(messages, max_tokens=32,
                                                          temperature=0)))
        self.assertEqual(tokens, self.client.tokenize(prompt))


class ApiKeyTest(unittest.TestCase):
    def test_api_key_is_sent_as_a_bearer_token(self):
        server = Server("--api-key", "k3y", api_key="k3y").start()
        try:
            with Client(server.address, api_key="k3y", timeout=60) as client:
                self.assertTrue(list(client.generate("The", **GREEDY)))
            with Client(server.address, api_key="wrong", timeout=60) as client:
                with self.assertRaises(grpc.RpcError) as e:
                    list(client.generate("The", **GREEDY))
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        finally:
            self.assertEqual(server.stop(), 0, server.output())


if __name__ == "__main__":
    unittest.main()
