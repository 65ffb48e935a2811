"""The graph: elaboration of a syntax tree into the networkx IR, and the words (ops, connection
patterns, merges) it is made of, all read through `vocabulary`. No torch here."""
