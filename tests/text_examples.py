"""Tiny tasks shared by the API, fine-tuning, policy and reliability tests (real MiniLM inputs):
a three-topic text task and three IOB2-tagged sentences."""

TEXTS = [
    "Shares fell sharply as the bank cut its profit forecast",
    "The central bank raised interest rates again",
    "The striker scored twice in the cup final",
    "The coach praised his team after the win",
    "The new phone has a faster chip and a better camera",
    "A software update fixes the security flaw",
]
LABELS = ["business", "business", "sport", "sport", "tech", "tech"]
QUERY = ["Investors sold stocks after weak earnings", "The goalkeeper saved a penalty"]

WORDS = [
    ["Ann", "met", "Bob", "in", "Paris"],
    ["Google", "opened", "an", "office", "in", "Berlin"],
    ["Bob", "works", "for", "Google"],
]
IOB2_TAGS = [
    ["B-person", "O", "B-person", "O", "B-loc"],
    ["B-org", "O", "O", "O", "O", "B-loc"],
    ["B-person", "O", "O", "B-org"],
]
