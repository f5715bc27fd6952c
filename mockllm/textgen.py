"""Varied, sentence-like text for the mock LLM, one chunk per "token".

Each chunk is one word with its leading space (" river"); the very first chunk of a
response has no leading space. Sentences start with a capital letter and end with a
period; commas appear now and then. Two consecutive chunks are never equal (litellm
raises on a stream that repeats the same chunk many times). Output depends only on the
seed, and the default seed is a stable hash of the messages, so the same prompt gives the
same text.
"""

from __future__ import annotations

import hashlib
import json
import random
from itertools import islice
from typing import Any, Iterator

_WORDS = """
the a an and or but so yet for with without about above across after against along
among around at before behind below beneath beside between beyond by during from in
inside into near of off on onto outside over past through toward under until upon within
river mountain valley forest garden window kitchen market city village harbor bridge
road street station library museum school office tower castle island desert ocean lake
meadow field orchard farm cottage cabin temple palace theater studio workshop factory
engine machine signal network server message letter journal story poem song melody
rhythm picture painting canvas color shadow light morning evening night winter summer
spring autumn season weather storm rain snow wind cloud thunder sunrise sunset moon star
planet comet galaxy atlas compass lantern candle mirror clock calendar ladder basket
bottle kettle blanket pillow carpet curtain doorway hallway staircase balcony chimney
traveler teacher student doctor farmer sailor painter writer baker builder gardener
merchant pilot captain neighbor stranger friend family child elder crowd team council
quietly slowly quickly gently carefully suddenly rarely often always never sometimes
again already almost nearly perhaps certainly simply finally together alone
bright dark warm cold quiet loud gentle steady calm brave clever curious patient eager
honest humble golden silver wooden ancient modern narrow wide distant nearby hidden
open empty crowded simple complex careful sudden gradual silent vivid pale heavy light
small large tiny huge early late young old new fresh familiar strange useful rare
walks runs builds carries finds follows gathers holds keeps leaves lifts makes moves
opens paints reads remembers repairs returns searches shares sings speaks studies
teaches travels waits wanders watches writes answers asks brings catches changes
chooses climbs collects counts crosses discovers draws explains grows hears imagines
invites joins knows learns listens notices offers plans plants prepares promises
reaches records sends shows starts stops tells thinks understands visits
was is were are will would could should might may must can does did has had
every each many several few some most other another same whole certain
because while although unless whenever wherever since though whether
idea question answer reason moment detail pattern method lesson choice purpose memory
promise secret surprise journey adventure discovery problem solution theory practice
history future present distance direction balance harmony courage wisdom patience
"""

VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split()))

_SPACED = tuple(" " + w for w in VOCABULARY)
_SPACED_CAP = tuple(" " + w.capitalize() for w in VOCABULARY)
_BARE_CAP = tuple(w.capitalize() for w in VOCABULARY)


def seed_for_messages(messages: Any) -> int:
    """A stable 63-bit seed derived from the messages (same prompt, same text)."""
    try:
        blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        blob = repr(messages)
    digest = hashlib.sha256(blob.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def iter_chunks(seed: int) -> Iterator[str]:
    """Endless stream of text chunks for ``seed``; never the same chunk twice in a row."""
    rng = random.Random(seed)
    n = len(VOCABULARY)
    randrange = rng.randrange
    rand = rng.random
    prev = ""
    first = True
    while True:
        sentence_len = 5 + randrange(12)
        for position in range(sentence_len):
            i = randrange(n)
            if position == 0:
                chunk = _BARE_CAP[i] if first else _SPACED_CAP[i]
            else:
                chunk = _SPACED[i]
            if position == sentence_len - 1:
                chunk += "."
            elif 0 < position < sentence_len - 2 and rand() < 0.08:
                chunk += ","
            if chunk == prev:
                # Pick the neighbouring word instead (keeps punctuation and case).
                j = (i + 1) % n
                table = _SPACED if position else (_BARE_CAP if first else _SPACED_CAP)
                chunk = table[j] + chunk[len(table[i]) :]
            first = False
            prev = chunk
            yield chunk


def chunks(seed: int, count: int) -> list[str]:
    """The first ``count`` chunks for ``seed``."""
    return list(islice(iter_chunks(seed), count))


def text(seed: int, count: int) -> str:
    """The whole text of ``count`` chunks for ``seed``."""
    return "".join(islice(iter_chunks(seed), count))
