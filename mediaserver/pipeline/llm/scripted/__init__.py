"""An offline, deterministic stand-in for a chat model.

For development, demos and tests: no network, no model weights, the same
answer every time, in well under a millisecond a turn. It reads only the
agent's tool definitions (names, descriptions, parameter names, descriptions,
types and enums), never special cases for particular tools, and it works on
both pocketsphinx's lowercase words and Whisper's cased, punctuated text.

How it decides, for the caller's last utterance:

1. **Reading.** The text goes through `normalise_transcript` (spoken numbers
   and spellings become "583", "B7X"), then into words with their stems (a
   small suffix stripper: "shipped" ~ "ship", "deliveries" ~ "delivery") and
   concepts (a table of everyday customer-service synonyms: package, parcel
   and delivery are all *order*; where, track and arrive are *status*; rain,
   cold and outside are *weather*).
2. **Answers first.** If our previous message asked for a tool's argument, the
   utterance is read as the answer ("It's 583", "five eight three", "Paris,
   please") and the request it completes is tried again; if it asked which
   tool was meant, the answer picks among the candidates.
3. **Tool choice.** Each tool is scored against the utterance: a word of its
   name counts 2, of its description 1, of its parameters 0.5, an enum value
   1; a synonym (same concept) counts three quarters of that; generic verbs
   ("get", "tell") never count and lookup verbs ("check", "find") at most 1;
   more words of one concept add half. A value that only fits the tool (a
   code for its ID parameter) adds up to 1. The best tool is called when it
   scores at least 1.75 and leads the next by at least 1.
4. **Arguments** come from the utterance by parameter kind, the most specific
   first so that each word fills one parameter: enum values (or synonyms),
   dates and times ("tomorrow", "next Friday", "3 PM"), codes and IDs
   (digits or spelled letters, preferably right after the parameter's own
   word: "order 583"), numbers, yes/no flags, and free text: names and
   places as Whisper capitalised them ("New York") or after "in"/"for"/"at"
   (pocketsphinx). Nothing is invented: a required argument not heard is
   asked for with a question built from its description ("What is the order
   ID?"), and the answer fills it on the next turn.
5. **Follow-ups.** After a tool call, "and what about order 12?", "what about
   London?", "how about tomorrow?" or "and 731?" call the same tool again
   with the new argument and the others carried over.
6. **Talk.** Otherwise: the agent's keyword `replies`, then small talk
   (greetings, thanks, goodbye, "who are you", "can you hear me"), then, if
   the utterance is a request that some tools half match, a clarifying
   question naming them; an empty or filler-only utterance is asked again;
   anything else gets `fallback`.

After a tool ran, its result's `response` text is spoken as is.
"""

from __future__ import annotations

from mediaserver.pipeline.llm.scripted.engine import ScriptedBackend, ScriptedConfig, ScriptedReply

# Not public API: tests time the tool choice, without asyncio, through this name.
from mediaserver.pipeline.llm.scripted.tools import profile as _profile  # noqa: F401

__all__ = ["ScriptedBackend", "ScriptedConfig", "ScriptedReply"]
