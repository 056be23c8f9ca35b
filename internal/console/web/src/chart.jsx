import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { STATUS_COLORS } from './ui.jsx';

// MinuteChart draws the status changes per minute, one line per status,
// with uPlot.
export function MinuteChart({ minutes, statuses }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = statuses.join(',');
  useEffect(() => {
    const el = box.current;
    const opts = {
      width: el.clientWidth || 800,
      height: 280,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(5, max * 1.1)] } },
      axes: [
        { stroke: '#5b6478', grid: { stroke: '#eef0f4' } },
        { stroke: '#5b6478', grid: { stroke: '#eef0f4' }, label: 'messages / min', size: 60 },
      ],
      series: [
        { label: 'minute' },
        ...statuses.map((s) => ({
          label: s,
          stroke: STATUS_COLORS[s],
          width: 2,
          // A dot marks each minute with changes of that status, so that a
          // lone minute's count is seen, not just a line's corner.
          points: { show: true, size: 6, filter: (u, si) => u.data[si].flatMap((v, i) => (v > 0 ? [i] : [])) },
        })),
      ],
    };
    plot.current = new uPlot(opts, data(minutes, statuses), el);
    const resize = () => plot.current.setSize({ width: el.clientWidth, height: 280 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.current.destroy();
      plot.current = null;
    };
  }, [shape]);
  useEffect(() => {
    if (plot.current) plot.current.setData(data(minutes, statuses));
  }, [minutes]);
  return <div class="chart" ref={box} />;
}

function data(minutes, statuses) {
  const xs = minutes.map((m) => new Date(m.at).getTime() / 1000);
  return [xs, ...statuses.map((s) => minutes.map((m) => m.counts[s] || 0))];
}
