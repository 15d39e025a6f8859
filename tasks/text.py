"""Templated English sentences for the tiny-gpt2 suite, and its word-level tokenizer (deterministic, offline).

    >>> from bench.tasks.text import TASKS, generate
    >>> texts, labels = generate("negation", 3, seed=0)
    >>> len(texts), labels.dtype.name, TASKS["negation"].classes
    (3, 'int64', ['negative', 'positive'])
    >>> all(len(t.split()) < MAX_WORDS for t in texts)
    True

Every sentence comes from one grammar over one lexicon (129 words),

    the [ADJ] SUBJECT [PREP the ATTRACTOR] [NEGATOR] VERB the [ADJ] OBJ [, OBJ … and OBJ] , it was [INTENSIFIER] SENTIMENT

with the evaluation clause ("it was …") closing or, half of the time, opening the sentence, e.g.
"it was really dull , the awful coaches near the singer never praise the cake , soup and pizza".
All tasks draw every slot from the same distribution (sentiment adjectives on nouns, evaluative
verbs, negators in 30 % of sentences, verbs that disagree with their subject in half) and each
labels one property of the sentence, the slot it fixes:

    topic      topic of the subject noun (5)             object     topic of the listed objects (5)
    sentiment  majority polarity of three sentiment      negation   does the subject like the objects?
               words: on the subject, the first object              the verb's stance (likes/hates …),
               and in the clause (2)                                 flipped by never/rarely (2)
    agreement  does the verb agree in number with the subject? An attractor noun of the other
               number sits between them half of the time (2)

so the tasks share vocabulary, syntax and inputs, and ask for different readings of the same
sentence: topic and object read different nouns, sentiment integrates three positions, negation
composes a negator with a verb, agreement compares two words across an attractor. The negation and
agreement labels are not exact XORs of two words (30 % negated, 70 % singular subjects): an exact
XOR gives no first-order signal, and a tiny model then sits at chance for hundreds of steps, or
never leaves it. (A counting task, "how many objects are listed", was tried and dropped: any merge
put it at chance while its partner kept ≥ 0.95, so its pairs had no merged point that cost both.)
`generate(task, n, seed)` depends only on its arguments (numpy's SeedSequence keyed by the task
name), so the same seed gives identical sentences on every machine; `build_tokenizer(texts)` trains
a `tokenizers` WordLevel model and wraps it as a `transformers.PreTrainedTokenizerFast`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

MAX_WORDS = 31            # words per sentence; + [EOS] ≤ 32 tokens
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]

# ---- lexicon ------------------------------------------------------------------------------------
# topic → (singular, plural) nouns
NOUNS: dict[str, list[tuple[str, str]]] = {
    "sports": [("player", "players"), ("coach", "coaches"), ("team", "teams"), ("ball", "balls"),
               ("referee", "referees"), ("stadium", "stadiums")],
    "food": [("chef", "chefs"), ("cake", "cakes"), ("soup", "soups"), ("waiter", "waiters"),
             ("bakery", "bakeries"), ("pizza", "pizzas")],
    "music": [("singer", "singers"), ("band", "bands"), ("guitar", "guitars"), ("drummer", "drummers"),
              ("song", "songs"), ("piano", "pianos")],
    "tech": [("robot", "robots"), ("phone", "phones"), ("engineer", "engineers"), ("laptop", "laptops"),
             ("server", "servers"), ("app", "apps")],
    "nature": [("river", "rivers"), ("tree", "trees"), ("bird", "birds"), ("forest", "forests"),
               ("farmer", "farmers"), ("flower", "flowers")],
}
TOPICS = list(NOUNS)
VERBS = [("sees", "see"), ("finds", "find"), ("needs", "need"), ("moves", "move"), ("watches", "watch"),
         ("visits", "visit")]                                                       # (singular, plural)
VERBS_POSITIVE = [("likes", "like"), ("praises", "praise"), ("loves", "love"), ("enjoys", "enjoy")]
VERBS_NEGATIVE = [("hates", "hate"), ("blames", "blame"), ("dislikes", "dislike"), ("fears", "fear")]
PREPS = ["near", "behind", "with", "beside", "above"]
ADJECTIVES = ["old", "new", "big", "small", "red", "blue", "young", "quiet"]
POSITIVE = ["good", "great", "wonderful", "lovely", "excellent", "superb", "pleasant", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "horrible", "poor", "dull", "nasty"]
INTENSIFIERS = ["very", "really", "quite", "truly", "rather"]
NEGATORS = ["never", "rarely"]
MAX_OBJECTS = 4
# Class k of every task is answered with the k-th of these words (their output embeddings are the
# frozen score heads of tiny-gpt2), as a prompted LM answers a multiple-choice question with fixed
# letters: function words that carry no task's label, so the pre-trained model starts at chance.
ANSWER_WORDS = PREPS
P_CLAUSE_FIRST = 0.5   # share of sentences that open with the evaluation clause
P_NEGATED = 0.3        # share of sentences with a negator before the verb
P_SINGULAR = 0.7       # share of singular subjects


@dataclass(frozen=True)
class Slots:
    """One sentence's choices; `render` turns them into text."""
    subject_topic: int
    subject_plural: bool
    object_topic: int
    n_objects: int                    # 1..MAX_OBJECTS
    agrees: bool                      # verb number = subject number
    negated: bool                     # a negator before the verb
    final_positive: bool              # polarity of the final sentiment word
    verb_positive: bool | None = None # stance of the verb (likes / hates); None = a neutral verb
    subject_eval: bool | None = None  # adjective on the subject: None = neutral or none, else its polarity
    object_eval: bool | None = None   # adjective on the first object


def _adjective(rng: np.random.Generator, polarity: bool | None, p_neutral: float = 0.5) -> list[str]:
    if polarity is None:
        return [str(rng.choice(ADJECTIVES))] if rng.random() < p_neutral else []
    return [str(rng.choice(POSITIVE if polarity else NEGATIVE))]


def render(rng: np.random.Generator, s: Slots) -> str:
    words = ["the", *_adjective(rng, s.subject_eval)]
    words.append(NOUNS[TOPICS[s.subject_topic]][rng.integers(6)][int(s.subject_plural)])
    if rng.random() < 0.5:                      # attractor: a noun of the other number, any topic
        att = NOUNS[TOPICS[rng.integers(len(TOPICS))]][rng.integers(6)]
        words += [str(rng.choice(PREPS)), "the", att[int(not s.subject_plural)]]
    verb_plural = s.subject_plural if s.agrees else not s.subject_plural
    if s.negated:
        words.append(str(rng.choice(NEGATORS)))
    verbs = VERBS if s.verb_positive is None else VERBS_POSITIVE if s.verb_positive else VERBS_NEGATIVE
    words.append(verbs[rng.integers(len(verbs))][int(verb_plural)])
    objs = [NOUNS[TOPICS[s.object_topic]][j] for j in rng.choice(6, size=s.n_objects, replace=False)]
    words += ["the", *_adjective(rng, s.object_eval, 0.3)]
    for k, o in enumerate(objs):
        if k:
            words.append("and" if k == len(objs) - 1 else ",")
        words.append(o[int(rng.random() < 0.5)])
    clause = ["it", "was"]
    if rng.random() < 0.5:
        clause.append(str(rng.choice(INTENSIFIERS)))
    clause.append(str(rng.choice(POSITIVE if s.final_positive else NEGATIVE)))
    if rng.random() < P_CLAUSE_FIRST:           # the evaluation clause leads or closes the sentence
        return " ".join(clause + [","] + words)
    return " ".join(words + [","] + clause)


# ---- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    name: str
    classes: list[str]
    slots: Callable[[np.random.Generator, int], Slots]     # (rng, label) → sentence choices
    description: str


def _base(rng: np.random.Generator, **fixed) -> Slots:
    """Every slot drawn from one distribution shared by all tasks; `fixed` overrides (a task's label)."""
    ev = [None if r < 0.5 else bool(r < 0.75) for r in rng.random(2)]
    negated = bool(rng.random() < P_NEGATED)
    s = dict(subject_topic=int(rng.integers(len(TOPICS))), subject_plural=bool(rng.random() >= P_SINGULAR),
             object_topic=int(rng.integers(len(TOPICS))), n_objects=int(rng.integers(1, MAX_OBJECTS + 1)),
             agrees=bool(rng.random() < 0.5), negated=negated, final_positive=bool(rng.random() < 0.5),
             verb_positive=bool(rng.random() < 0.5), subject_eval=ev[0], object_eval=ev[1])
    s.update(fixed)
    return Slots(**s)


def _sentiment(rng, y):
    """Three sentiment words (subject, first object, final); the label is their majority polarity."""
    pol = np.full(3, bool(y))
    pol[rng.integers(3)] = bool(y) if rng.random() < 0.5 else not y      # 2 or 3 agree with the label
    return _base(rng, subject_eval=bool(pol[0]), object_eval=bool(pol[1]), final_positive=bool(pol[2]))


def _negation(rng, y):
    """The stance of the verb (likes / hates …), flipped by a negator before it in 30 % of sentences."""
    negated = bool(rng.random() < P_NEGATED)
    return _base(rng, negated=negated, verb_positive=bool(y) != negated)


def _agreement(rng, y):
    """Verb number against subject number (70 % of subjects are singular, as in running text)."""
    return _base(rng, agrees=bool(y))


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("topic", TOPICS, lambda rng, y: _base(rng, subject_topic=y), "topic of the subject noun"),
    TaskSpec("object", TOPICS, lambda rng, y: _base(rng, object_topic=y), "topic of the listed objects"),
    TaskSpec("sentiment", ["negative", "positive"], _sentiment,
             "majority polarity of three sentiment words (lexicon)"),
    TaskSpec("negation", ["negative", "positive"], _negation,
             "does the subject like the objects? a negator flips the verb's stance"),
    TaskSpec("agreement", ["ungrammatical", "grammatical"], _agreement,
             "does the verb agree in number with the subject (attractor nouns between)?"),
]}


def task_rng(task: str, seed: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(task.encode()), stream]))


def generate(task: str, n: int, seed: int = 0, stream: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` sentences of `task` with balanced labels (shuffled), as (texts, int64 labels)."""
    spec = TASKS[task]
    rng = task_rng(task, seed, stream)
    labels = rng.permutation(np.arange(n) % len(spec.classes)).astype(np.int64)
    return [render(rng, spec.slots(rng, int(y))) for y in labels], labels


def generate_splits(task: str, sizes: dict[str, int], seed: int = 0) -> dict[str, tuple[list[str], np.ndarray]]:
    """Disjoint splits: sentences are drawn in one stream, de-duplicated, then cut in order, so no
    evaluation sentence occurs in training. Sizes are met exactly (more sentences are drawn if needed).
    Labels are drawn balanced; de-duplication leaves them roughly, not exactly, balanced."""
    need, stream, seen = sum(sizes.values()), 0, {}
    while len(seen) < need:
        texts, labels = generate(task, int(need * 1.1) + 16, seed, stream)
        for t, y in zip(texts, labels):
            if t not in seen and len(seen) < need:
                seen[t] = int(y)
        stream += 1
        if stream > 20:
            raise RuntimeError(f"task {task!r}: only {len(seen)} distinct sentences, {need} requested")
    items = list(seen.items())
    out, i = {}, 0
    for split, k in sizes.items():
        chunk = items[i:i + k]
        out[split] = ([t for t, _ in chunk], np.array([y for _, y in chunk], dtype=np.int64))
        i += k
    return out


def lexicon() -> list[str]:
    """Every word the grammar can produce."""
    words = [w for pairs in NOUNS.values() for p in pairs for w in p]
    words += [w for verbs in (VERBS, VERBS_POSITIVE, VERBS_NEGATIVE) for p in verbs for w in p]
    words += PREPS + ADJECTIVES + POSITIVE + NEGATIVE + INTENSIFIERS + NEGATORS + ["the", "and", ",", "it", "was"]
    return sorted(set(words))


# ---- tokenizer ----------------------------------------------------------------------------------
def build_tokenizer(texts: list[str], max_length: int = MAX_WORDS + 1):
    """Train a word-level `tokenizers` model on `texts` (whitespace pre-tokenizer, [PAD]/[UNK]/[BOS]/[EOS]
    specials, "[EOS]" appended to every sentence) and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # the lexicon goes in too, so that every word of the grammar has an id however few texts there are
    tok.train_from_iterator([*texts, " ".join(lexicon())],
                            trainer=trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", tok.token_to_id("[EOS]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", padding_side="right", model_max_length=max_length)


def encode(tokenizer, texts: list[str], max_length: int = MAX_WORDS + 1) -> dict[str, np.ndarray]:
    """Right-padded int64 input_ids / attention_mask [N, max_length] (the fast backend, batched)."""
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token, length=max_length)
    backend.enable_truncation(max_length)
    try:
        enc = backend.encode_batch(texts)
    finally:
        backend.no_padding()
        backend.no_truncation()
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
