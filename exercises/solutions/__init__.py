"""The solutions of the exercises, one module per exercise with the stub's names. Try the exercise first."""
