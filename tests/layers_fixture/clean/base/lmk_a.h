/* fixture: a base header */
