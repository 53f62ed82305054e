//! Automatic call distribution: a pure routing core for queues, agents, skills and priorities, with KPIs.
