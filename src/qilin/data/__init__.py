"""Data: readers for the source formats, the data stage (sources -> stage datasets + card), contamination."""
