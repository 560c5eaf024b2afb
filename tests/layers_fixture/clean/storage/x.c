/* fixture: storage using base only */
#include "lmk_store.h"
#include "../base/lmk_a.h"
#if 0
#include "lmk_session.h" /* not compiled: not counted */
#endif
int x(void) { return 0; }
