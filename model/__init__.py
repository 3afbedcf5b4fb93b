"""What a job is and how it moves: tables, statuses, the state machine, job kinds."""
