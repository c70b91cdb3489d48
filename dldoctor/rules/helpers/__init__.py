"""What the rule families share: the graph's op and module vocabulary and walks (`graph`), and the
weight-matrix helpers (`weights`). Catalog modules import from here, never from each other."""
