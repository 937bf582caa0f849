"""Rendering: text tables and matplotlib figures. No model math lives here."""
