"""Where a task may go and which node is best: Swarm's filters and spread ranking, as pure functions.

Shared because two processes must give the same answer: the scheduler places tasks with it, and the
API explains a placement (`/shoal/tasks/{id}/explain`) from its own projection with the same code.
"""
