/* fixture: a test helper, in no layer */
