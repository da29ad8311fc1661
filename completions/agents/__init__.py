"""Agents: a workspace's named presets (instructions, model, parameters, memory policy,
collections), called by name in `model`. Models live in completions' migrations."""
