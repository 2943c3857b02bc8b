"""Knowledge and planning: the answers, the rules they must follow, the memory they need, and the plan that
resolves them. Reads the catalog only; nothing here prints, renders or serves."""
