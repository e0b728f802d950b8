"""Item meaning beyond interactions: catalogue text and attributes, the sentence encoder, the text
alignment fitted after training, and co-interaction vectors."""
