"""Planning: search over plans (sweep), capacity and cost."""
