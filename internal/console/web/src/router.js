import { useEffect, useState } from 'preact/hooks';

// Client-side routes under /console/; chatq serves the app's page for any
// of them, so a reload or a shared link lands on the same page.
export const BASE = '/console';

export const currentPath = () => {
  const p = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '/';
  return p || '/';
};

export function navigate(path) {
  history.pushState(null, '', BASE + path);
  window.dispatchEvent(new Event('chatq:navigate'));
}

// useLocation re-renders on navigation, and turns clicks on the app's own
// links into navigations without a page load.
export function useLocation() {
  const [loc, setLoc] = useState({ path: currentPath(), search: location.search });
  useEffect(() => {
    const update = () => setLoc({ path: currentPath(), search: location.search });
    const click = (e) => {
      const a = e.target.closest && e.target.closest('a[href]');
      if (!a || a.target || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
      const url = new URL(a.href, location.href);
      if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
      e.preventDefault();
      history.pushState(null, '', url.pathname + url.search);
      update();
    };
    window.addEventListener('popstate', update);
    window.addEventListener('chatq:navigate', update);
    document.addEventListener('click', click);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('chatq:navigate', update);
      document.removeEventListener('click', click);
    };
  }, []);
  return loc;
}

export const href = (path) => BASE + path;
