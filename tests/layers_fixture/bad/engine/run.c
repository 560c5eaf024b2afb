/* fixture: a shell call; system() in a comment and "popen(" in a string are not calls */
#include <stdio.h>
#include <stdlib.h>
#include "lmk_session.h"
#include "../tests/helper.h"
static const char *s = "popen(";
int run(void) { return system("true"); }
