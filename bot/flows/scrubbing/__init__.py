"""The parts of the free-text scrubber; ``bot.flows.scrub`` is the one entry point callers use."""
