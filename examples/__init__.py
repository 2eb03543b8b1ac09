"""Models that are not the IMDB one, for ``make bench MODEL=examples.<name>:build``."""
