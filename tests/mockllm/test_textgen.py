"""The mock's generated text (mockllm/textgen.py) on its own: deterministic per seed,
one word per chunk, never the same chunk twice in a row, sentence-like. What a client
gets of it over HTTP: tests/mockllm/test_server.py."""
from mockllm import textgen


def test_the_same_seed_gives_the_same_text_and_another_seed_another():
    assert textgen.text(7, 200) == textgen.text(7, 200)
    assert textgen.text(7, 200) != textgen.text(8, 200)
    assert textgen.text(7, 200) == "".join(textgen.chunks(7, 200))
    assert textgen.chunks(7, 10) == textgen.chunks(7, 200)[:10]  # a longer answer starts the same


def test_each_chunk_is_one_word_and_no_two_in_a_row_are_equal():
    for seed in range(50):
        chunks = textgen.chunks(seed, 300)
        assert len(chunks) == 300
        assert all(len(chunk.split()) == 1 for chunk in chunks)
        assert all(a != b for a, b in zip(chunks, chunks[1:]))


def test_the_text_reads_as_sentences():
    text = textgen.text(3, 400)
    assert text[0].isupper() and not text.startswith(" ")
    assert ". " in text and all(s[:1].isupper() for s in text.split(". ")[1:])


def test_the_seed_is_stable_for_the_same_messages_and_differs_for_others():
    messages = [{"role": "user", "content": "hi"}]
    seed = textgen.seed_for_messages(messages)
    assert seed == textgen.seed_for_messages([{"content": "hi", "role": "user"}])  # key order does not matter
    assert seed != textgen.seed_for_messages([{"role": "user", "content": "hello"}])
    assert 0 <= seed < 2 ** 63
    assert textgen.seed_for_messages([{"content": "\ud800"}]) >= 0  # a lone surrogate does not break it
