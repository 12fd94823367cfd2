(function () {
  var d = document.getElementById('unigate-launcher');
  if (!d || d.getAttribute('data-unigate-menu')) return;
  var b = document.getElementById('unigate-launcher-button');
  var m = document.getElementById('unigate-launcher-menu');
  if (!b || !m || !m.querySelectorAll) return;
  d.setAttribute('data-unigate-menu', '1');
  var items = Array.prototype.slice.call(m.querySelectorAll('a'));
  b.setAttribute('aria-haspopup', 'menu');
  b.setAttribute('aria-controls', m.id);
  m.setAttribute('role', 'menu');
  m.setAttribute('aria-labelledby', b.id);
  Array.prototype.forEach.call(m.querySelectorAll('li'), function (li) {
    li.setAttribute('role', 'none');
  });
  items.forEach(function (a) {
    a.setAttribute('role', 'menuitem');
    a.tabIndex = -1;
  });
  function sync() {
    b.setAttribute('aria-expanded', d.open ? 'true' : 'false');
  }
  function show(open) {
    d.open = open;
    sync();
  }
  function go(i) {
    if (!items.length) return;
    items[(i + items.length) % items.length].focus();
  }
  sync();
  d.addEventListener('toggle', sync);
  b.addEventListener('keydown', function (e) {
    var k = e.key;
    if (k === 'ArrowDown' || k === 'ArrowUp' || ((k === 'Enter' || k === ' ') && !d.open)) {
      e.preventDefault();
      show(true);
      go(k === 'ArrowUp' ? -1 : 0);
    }
  });
  m.addEventListener('keydown', function (e) {
    var k = e.key, i = items.indexOf(document.activeElement);
    if (k === 'ArrowDown') go(i + 1);
    else if (k === 'ArrowUp') go(i - 1);
    else if (k === 'Home') go(0);
    else if (k === 'End') go(-1);
    else if (k === 'Tab') {
      b.focus();
      show(false);
      return;
    } else if (k.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey && k !== ' ') {
      for (var n = 1; n <= items.length; n++) {
        var a = items[(i + n) % items.length];
        if (a.textContent.replace(/^\s+/, '').charAt(0).toLowerCase() === k.toLowerCase()) {
          a.focus();
          break;
        }
      }
    } else return;
    e.preventDefault();
  });
  d.addEventListener('keydown', function (e) {
    if ((e.key === 'Escape' || e.key === 'Esc') && d.open) {
      e.preventDefault();
      e.stopPropagation();
      show(false);
      b.focus();
    }
  });
  function outside(e) {
    if (d.open && !d.contains(e.target)) show(false);
  }
  document.addEventListener('click', outside, true);
  document.addEventListener('focusin', outside, true);
})();
