/* fixture: an engine header */
#include "lmk_store.h"
#include "../base/lmk_a.h"
