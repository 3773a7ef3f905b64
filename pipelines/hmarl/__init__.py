"""HMARL decisions: specialist agents, the ML vote, consensus, feedback and their Valkey layout (issue 4)."""
