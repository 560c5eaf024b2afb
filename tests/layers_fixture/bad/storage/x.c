/* fixture: storage reaching up into the engine */
#include "lmk_store.h"
#include "lmk_session.h"
#if 0
#include "lmk_session.h" /* not compiled: not counted */
#endif
int x(void) { return 0; }
