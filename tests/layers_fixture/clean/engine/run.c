/* fixture: system() in a comment and "popen(" in a string are not calls */
#include <stdlib.h>
#include "lmk_session.h"
static const char *s = "system(\"x\") popen(";
int run(void) { return s[0]; }
