"""Demo modules bundled with nbrunner, so a new home has something to run."""
