// page.js -- the entry of the browser bundle client-package.test.mjs builds
// with esbuild from a project where the npm tarball was installed: the
// package comes in through its name, as in an application, and the page
// hands the Client class to the test.
import { Client } from '@wsync/client';

window.wsyncPackage = { Client };
document.body.dataset.ready = 'true';
