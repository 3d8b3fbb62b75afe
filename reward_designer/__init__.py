"""reward-designer: LLM-designed dense rewards, checked in a sandbox, refined from trained policies."""
