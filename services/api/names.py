"""Names for services created without one, in Docker's `adjective_surname` style.

dockerd fills an empty name this way before swarmkit validates the spec, so scripts that omit
`--name` get a readable, DNS-safe name instead of an error.
"""

from __future__ import annotations

import random
from collections.abc import Container

ADJECTIVES = (
    "admiring", "agitated", "amazing", "angry", "awesome", "beautiful", "blissful", "bold", "brave",
    "busy", "charming", "clever", "compassionate", "competent", "confident", "cool", "dazzling",
    "determined", "eager", "ecstatic", "elastic", "elated", "elegant", "epic", "exciting", "fervent",
    "festive", "focused", "friendly", "frosty", "funny", "gallant", "gifted", "goofy", "gracious",
    "happy", "hopeful", "hungry", "inspiring", "intelligent", "jolly", "keen", "kind", "laughing",
    "loving", "lucid", "magical", "modest", "musing", "nervous", "nice", "nifty", "nostalgic",
    "optimistic", "peaceful", "pensive", "practical", "priceless", "quirky", "quizzical", "relaxed",
    "reverent", "romantic", "serene", "sharp", "silly", "sleepy", "stoic", "strange", "suspicious",
    "sweet", "tender", "thirsty", "trusting", "upbeat", "vibrant", "vigilant", "wizardly", "wonderful",
    "youthful", "zealous", "zen",
)
SURNAMES = (
    "agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli", "babbage", "banach",
    "bardeen", "bartik", "bell", "blackwell", "bohr", "booth", "borg", "bose", "brahmagupta",
    "brattain", "brown", "carson", "cerf", "chandrasekhar", "curie", "darwin", "davinci", "dijkstra",
    "einstein", "elion", "engelbart", "euclid", "euler", "fermat", "fermi", "feynman", "franklin",
    "galileo", "gauss", "goldberg", "goodall", "hamilton", "heisenberg", "hodgkin", "hopper",
    "hypatia", "jackson", "jennings", "kalam", "keller", "kepler", "khorana", "knuth", "lamarr",
    "lamport", "leakey", "liskov", "lovelace", "mayer", "mccarthy", "meitner", "mendel", "morse",
    "napier", "newton", "noether", "pasteur", "perlman", "pike", "poincare", "ramanujan", "ritchie",
    "rosalind", "sammet", "shannon", "shockley", "sinoussi", "swanson", "tesla", "thompson",
    "torvalds", "turing", "wescoff", "wiles", "williams", "wozniak", "wright", "yalow", "yonath",
)

_rng = random.SystemRandom()


def random_name(taken: Container[str], rng: random.Random = _rng) -> str:
    """A name not in `taken`; after a few collisions a digit is appended, as Docker does on retry."""
    for attempt in range(10):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
        if attempt:
            name += str(rng.randint(0, 9))
        if name not in taken:
            return name
    return f"{name}{rng.randint(10, 99999)}"
