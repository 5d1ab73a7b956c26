"""The `notetaker` command-line tool for operators."""
