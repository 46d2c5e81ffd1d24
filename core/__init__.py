"""The bottom layer: errors, parameter specs, validation rules and the value types that
every other package shares (parallel layout, expert-parallel place, topology). Imports
nothing else of this project; everything else may import it."""
