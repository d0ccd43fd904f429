// Inline SVG icons (bundled; no icon font or CDN). Decorative: the buttons carry the names.

const paths: Record<string, string> = {
  send: "M3 20l18-8L3 4v6l12 2-12 2z",
  stop: "M6 6h12v12H6z",
  copy: "M8 8h11v13H8zM5 3h11v3H7v11H5z",
  up: "M2 21h4V9H2zm20-11a2 2 0 00-2-2h-6.3l1-4.6-.1-.4L13.5 2 7 8.6V21h11a2 2 0 001.8-1.2l3-7.1.2-.7z",
  down: "M22 3h-4v12h4zM2 14a2 2 0 002 2h6.3l-1 4.6.1.4 1.1 1 6.5-6.6V3H6a2 2 0 00-1.8 1.2l-3 7.1-.2.7z",
  trash: "M6 7h12l-1 14H7zM9 3h6l1 2h4v2H4V5h4z",
  edit: "M3 17.2V21h3.8L18 9.8 14.2 6zM20.7 7a1 1 0 000-1.4l-2.3-2.3a1 1 0 00-1.4 0L15.2 5 19 8.8z",
  download: "M12 16l-5-5h3V4h4v7h3zM5 18h14v2H5z",
  close: "M6 5l13 13-1 1L5 6zM5 18L18 5l1 1L6 19z",
  plus: "M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z",
  search: "M10 4a6 6 0 014.8 9.6l5 5-1.4 1.4-5-5A6 6 0 1110 4zm0 2a4 4 0 100 8 4 4 0 000-8z",
  upload: "M12 4l5 5h-3v6h-4V9H7zM5 18h14v2H5z",
  menu: "M3 6h18v2H3zm0 5h18v2H3zm0 5h18v2H3z",
};

export function Icon({ name }: { name: keyof typeof paths | string }) {
  return (
    <svg class="icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" focusable="false">
      <path d={paths[name] ?? ""} fill="currentColor" />
    </svg>
  );
}
