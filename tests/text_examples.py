"""A tiny three-topic text task shared by the API and fine-tuning tests (real MiniLM inputs)."""

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
